"""Privacy evaluation of the three arms (paper 3.3, 3.5; claim C3): gradient inversion against
what each party observes and membership inference on the released models.

Modules: :mod:`options` (attack options: ``bfdl attack`` and the reproduction profiles),
:mod:`metrics` (SSIM/PSNR, Wilson interval, ROC summaries, the DP TPR bound), :mod:`observation`
(the updates an aggregator observes: plain, secure sum, DP-noised), :mod:`label_recovery` (iDLG
for sigmoid outputs), :mod:`inversion` (DLG / Inverting Gradients), :mod:`inversion_sweep` (the
settings sweep and its success rule), :mod:`membership` (loss threshold, LiRA),
:mod:`run_attacks` (run directories -> ``attacks/*.json``, read through ``bfdl_tff.runs.RunDir``),
:mod:`toy` (tiny models and images for tests and benchmarks). Definitions and caveats:
``docs/privacy.md``.
"""
