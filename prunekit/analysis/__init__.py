"""Analysis: which channels of which weights must go together, and which must stay.

============== ==================================================================================
module         concern
============== ==================================================================================
``atoms``      channel atoms and the union-find that couples and pins them
``context``    the whole API a rule author needs: ``Ctx``, ``Labels``, ``Rule``, ``RuleSet``
``ruleset``    ``Rule``/``RuleSet``, rules users add (``prune(..., rules=)``, entry points
               ``prunekit.rules``) and the lookup order
``rules/``     the built-in op table, one module per op family
``walk``       walk the graph once, label every tensor dimension with its atoms (``Analysis``)
============== ==================================================================================

Rules import ``context`` (and ``ruleset``); nothing here imports back from ``rules`` except
the lookup, at call time.
"""
