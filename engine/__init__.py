"""meshvpn engine: the privileged helper's protocol cores, data plane and OS adapters."""
