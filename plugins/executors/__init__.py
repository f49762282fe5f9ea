"""Built-in executors: how the cells of a grid are run."""
