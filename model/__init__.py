"""TensorFlow/Keras side of MetaProfile: input pipeline, profile network, relation module,
episode sampler, losses and schedules. Imports schemas, tensorflow and numpy — never pyspark.
"""
