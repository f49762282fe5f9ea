"""The front end: the command line (`cli`) and the console that shows what the other sides return
(`console`: one renderer of a grid's events, and the result tables)."""
