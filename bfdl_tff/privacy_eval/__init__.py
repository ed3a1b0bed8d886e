"""Privacy evaluation of the three arms (paper 3.3, 3.5; claim C3): gradient inversion against
what each party observes and membership inference on the released models.

Modules: :mod:`metrics` (SSIM/PSNR, Wilson interval, ROC summaries, the DP TPR bound),
:mod:`inversion` (DLG / iDLG / Inverting Gradients), :mod:`membership` (loss threshold, LiRA),
:mod:`run_attacks` (run directories -> ``attacks/*.json``), :mod:`toy` (tiny models and images
for tests and benchmarks). Definitions and caveats: ``docs/privacy.md``.
"""
