"""Interop: forms of a model that other tools can work with.

``recurrent`` converts ``nn.GRU``/``nn.LSTM`` to an explicit, prunable form and back
(``to_prunable`` / ``to_native``), for structural pruning tools that cannot see into the fused
recurrent op.  PruneKit itself prunes the fused ops directly (``analysis/rules/recurrent.py``).
"""
