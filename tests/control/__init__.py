"""Tests of the control plane: keys, Noise, tailcfg, netmap, reconfig, control client (unit, pair and lab)."""
