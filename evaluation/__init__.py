"""Meta-testing on unseen target tasks (paper section 4): Table 3, Figures 3 and 4, and a
seed-count sweep against classic DMP baselines.

    cfg = EvalConfig(repeats=3)                       # or EvalConfig.quick_preset()
    result = evaluate(config, "models/20260630T021500Z", eval_cfg=cfg)
    result["out"]                                     # reports/evaluation/<version>/

**Protocol.** For each unseen target task the users labelled for it (``target_labels``) are
split by a salted hash of ``(repeat seed, user id)`` into an *adaptation* set (the labelled
"support / prediction" data of section 4, ``adaptation_fraction`` of the users) and a *test*
set. The split does not depend on the task, so within one repeat a user is an adaptation
user for every task or for none. Every method sees only (a subset of) the adaptation set's
labels and is scored on the whole test set of the task, with AUROC and AUPR (average
precision). The same test set serves every experiment and level of a (task, repeat), so
levels compare on the same users.

**Methods.**

* ``meta_profile`` — zero-training: prototypes of the adaptation users' embeddings from the
  meta-trained g_θ, relation logits r(q, p⁺) − r(q, p⁻) from its f_θ
  (``adapt.prototype_scores`` on embeddings computed once).
* ``meta_profile_probe`` — a cross-validated logistic regression on the frozen embedding
  beside the aggregates (``baselines.probe_scores``): a head that uses more seeds.
* ``meta_profile_fine_tuned`` — ``adapt.fine_tune_scores``: the meta-trained model trained on
  the adaptation labels, early-stopped on a validation fold, then prototypes as above.
* ``scratch`` — the paper's baseline "normal training" (section 4.1): ``adapt.scratch_scores``,
  the same network and f_θ randomly initialised and trained with the same early-stopped
  procedure (its own learning rate). Its results do not depend on the meta-trained weights
  and are reused across runs (:class:`ScratchCache`).
* ``logreg``, ``hgb`` and ``cosine`` — classic DMP baselines (scikit-learn, see
  ``model/baselines.py``) on per-user aggregates: per modality the channel totals and
  hour-of-day totals over the year (log1p), the numeric demographics with their missing
  flags and the categorical demographics one-hot, standardised with the adaptation side's
  statistics.

**Experiments** (each a list of levels; a level is a subset of the adaptation set, drawn by
ranking users by a salted hash so it is deterministic for a seed and nested across levels):

* ``table3`` — the whole adaptation set (paper Table 3).
* ``masking`` — fraction of adaptation labels kept, stratified by class (the prevalence stays
  the task's): 100, 80, 60, 40, 20 % (moderate) and 5, 3, 1, 0.5 % (extreme), paper Figure 3.
  Each class keeps ``max(1, round(fraction · n_class))`` users, so at least one positive and
  one negative always remain: at 0.5 % of 900 users that is 1 positive and 4 negatives.
* ``imbalance`` — ratio positives / negatives in the adaptation set, ``0.5 · 2^k`` for k = 0..6
  (paper Figure 4), by subsampling to a fixed total per task: the largest total that every
  ratio can reach with the task's adaptation positives and negatives (or
  ``imbalance_total``), so only the ratio changes between levels. The realised ratio of each
  subset is recorded (rounding moves it for small totals).
* ``seeds`` — n positive seeds plus n labelled negatives from the adaptation set, n in
  ``seed_counts``.
* ``seeds_pu`` — the campaign setting: n positive seeds only, and ``pu_background``
  unlabelled users of the adaptation side as negatives (positive-unlabelled learning).

**Leakage guards** (:class:`LeakageError`): target labels must come from a period after the
feature window (:func:`check_label_periods`); source and target task names are disjoint
(:func:`check_tasks_disjoint`); the users scored for a task never include its adaptation
users, asserted for every trial (:func:`check_disjoint_users`).

**Memory.** Heatmaps are read once, every split, through ``make_dataset(shuffle=False,
repeat=False)``. Each batch is embedded with the meta-trained model, reduced to the baseline
aggregates, and kept *sparse* (:class:`UserStore`: the non-zero cells, about a kilobyte per
user instead of ~0.56 MB dense). Fine-tuning, training from scratch and re-embedding the test
users with an adapted model densify only the rows a step or an embedding batch needs
(:class:`LazyRows`), so no dense heatmap of all users is ever held.
"""
from __future__ import annotations
