"""Accuracy, threshold calibration and demographic audit (``dedup eval``, ``dedup calibrate``).

- ``scores``: impostor and genuine score distributions without materialising pairs;
- ``tail``: the impostor tail model (generalized Pareto) and FPIR(N) projection;
- ``metrics``: DET, FNMR at FMR, per-group error rates;
- ``identification``: one-to-many searches, FNIR at FPIR, rank-1;
- ``evaluate``: the whole evaluation; ``calibrate``: the threshold for a target FPIR;
- ``report``: Markdown report and PNG curves; ``data``: labelled sets.
- ``live``: what a deployment measures on itself (impostor tail refresh, per-group FMR, live FNIR).
"""
