"""The worker's side: running a job's cells, in a worker process or in the parent by the local
executor. Models and their weights, backend stacks, data loading and the decoded-input cache,
validation passes, benchmarks, metadata; `jobs.run_cells` runs a `Job` and yields each cell's
outcome with its record. Imports only the base (the modules at the package's top level)."""
