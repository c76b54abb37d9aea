"""Prune: choose the channels to remove and remove them.

================ ================================================================================
module           concern
================ ================================================================================
``importance``   the table of named criteria (l1, l2, bn_scale, random) and channel scores
``plan``         channels -> groups, ratios per group, local or global choice, explicit channels;
                 refusals that name the field at fault
``surgery``      slice tensors, run the rules' rewrites (view sizes, groups, split sizes, scale)
================ ================================================================================
"""
