"""Built-in data set sources."""
