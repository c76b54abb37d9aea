"""Files in and out: what a file is, reading it without running it, writing the pruned model.

===================== ==========================================================================
module                concern
===================== ==========================================================================
``formats``           what a file is, from its bytes (TorchScript zip, ``.pt2`` zip, ``torch.save``,
                      safetensors)
``safety/``           the checks an upload passes before torch reads it (see its ``__init__``)
``loading``           read it (weights-only pickles, audited archives), build state-dicts into
                      their registered architecture
``checkpoint``        Hugging Face checkpoint folders: ``config.json`` + safetensors (sharded)
``empty``             build an architecture with ``meta`` parameters; the upload's tensors become them
``ties``              parameters one module shares under several names (tied embeddings)
``inputs``            example inputs from the spec, the architecture or a safetensors file
``export``            write TorchScript / ``.pt2`` / state-dict or checkpoint + manifest atomically
``rebuild``           ``load_pruned``: resize a registered architecture to a manifest
===================== ==========================================================================
"""
