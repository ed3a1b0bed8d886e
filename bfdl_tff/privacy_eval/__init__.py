"""Privacy evaluation of the three arms (paper 3.3, 3.5; claim C3): gradient inversion against
what each party observes and membership inference on the released models.

Modules: :mod:`options` (attack options: ``bfdl attack`` and the reproduction profiles),
:mod:`metrics` (SSIM/PSNR, Wilson and Clopper-Pearson intervals, ROC summaries with low-FPR
counts, the DP TPR bound), :mod:`problem_grads` (weight gradients of many independent problems
in one pass), :mod:`observation` (the updates an aggregator observes: plain, secure sum,
DP-noised, with the run's client optimizer), :mod:`label_recovery` (iDLG for sigmoid outputs),
:mod:`inversion` (DLG / Inverting Gradients, many targets at once), :mod:`inversion_sweep` (the
settings: target x batch x local steps x round, and the success rule), :mod:`membership` (loss
threshold, LiRA), :mod:`dp_audit` (membership TPR against the run's DP bound; no TensorFlow),
:mod:`run_attacks` (run directories -> ``attacks/*.json``, read through ``bfdl_tff.runs.RunDir``),
:mod:`toy` (tiny models and images for tests and benchmarks). Definitions and caveats:
``docs/privacy.md``.
"""
