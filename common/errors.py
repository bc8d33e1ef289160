"""The one error type that a pipeline step reports as a single line.

Every stage's own error (``EncodeError``, ``HeatmapsError``, ...) derives from
:class:`PipelineError`. A job's entry point turns one into ``<prog>: error: <message>`` and
exit status 1; anything else is a bug and keeps its traceback.
"""


class PipelineError(RuntimeError):
    """A run that must stop without publishing: bad input, missing data, a wrong setting."""
