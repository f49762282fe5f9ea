"""The parent's side: options resolved into a plan (every name, folder and checkpoint checked
before any model runs), the grid of cells, the engine's loop that hands them to an executor and
stores each record it returns, and one `rbench run` with its reports."""
