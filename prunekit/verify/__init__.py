"""Proof that a prune is right before anything is handed out.

============ ===================================================================================
module       concern
============ ===================================================================================
``masked``   the masked original: the captured graph with every removed channel zeroed
``check``    the one output comparator (``compare_outputs``), the upload-vs-capture comparison
             and the pruned-vs-masked check at two batch sizes
============ ===================================================================================
"""
