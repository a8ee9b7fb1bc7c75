"""Plain data types shared by the layers: node/machine/disco keys and the network map."""
