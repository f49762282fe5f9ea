"""Built-in accelerator backends and modifiers."""
