"""The report side: records to tables. Scoring stored predictions into rows, the `Results` merge
and its CSV files (and timm's published files read back), conformance, comparisons, and the
HTML site with its plots. Imports the base and the worker side's model and metadata tables."""
