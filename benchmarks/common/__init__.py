"""What the benchmark scripts share; importing it (or any of its modules) changes no setting.

- `problems`: the planted-teacher problem, the gated benchmarks' `Problem`, the sharding benchmark's rows and
  scikit-learn's data sets.
- `timing`: wall times of blocking calls, repeats and medians, BLAS thread limits, time formatting, logging.
- `machine`: `enable_x64`, forced host devices, and the machine description every report starts with.
- `records`: `Run`, the one record of a timed configuration, and its JSON-lines output.
- `tables`: markdown tables, number formats and the report's head and output.
- `cli`: the command-line options several scripts share.
- `peers`: pyscnn's solvers called on a `Problem` (with wall-clock limits), skipped when pyscnn is missing.
"""
