"""``prunekit.preload`` must name what a job imports lazily: a worker imports it at start, so a
stale list would silently move ~1 s of imports back into the first user's job."""

import subprocess
import sys
import textwrap


def test_a_job_after_preload_imports_no_more_of_torchs_tracing_stack(tmp_path):
    code = textwrap.dedent(f"""
        import sys, torch, torch.nn as nn
        import prunekit
        from prunekit.preload import MODULES, preload
        preload()
        missing = [m for m in MODULES if m not in sys.modules]
        assert not missing, missing
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
        torch.jit.save(torch.jit.trace(model, torch.randn(2, 3, 16, 16)), {str(tmp_path / 'm.pt')!r})
        before = set(sys.modules)
        prunekit.prune_to_dir({str(tmp_path / 'm.pt')!r}, {{"inputs": [{{"shape": [1, 3, 16, 16]}}], "ratio": 0.5}},
                              {str(tmp_path / 'out')!r})
        new = sorted(m for m in set(sys.modules) - before
                     if m.startswith(("torch.export", "torch._export", "torch._functorch", "torch._inductor",
                                      "torch.fx", "torch._subclasses", "sympy", "prunekit")))
        print("NEW", new)
        assert not new, new
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
