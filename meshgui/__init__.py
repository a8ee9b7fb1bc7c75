"""meshgui: the unprivileged Qt tray app that drives the helper over its LocalAPI."""
