"""Tests of scripts/bench_peers.py: the real coat-bench on the CPU (test_small) beside a stand-in peer script that
prints torch_baseline.py's JSON line; the ratios in the table are recomputed here from the JSON the script wrote.

  python3 tests/scripts/test_bench_peers.py BUILD_DIR
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "bench_peers.py")
CONFIG = os.path.join(REPO, "configs", "test_small.json")
BUILD = sys.argv.pop(1) if len(sys.argv) > 1 else os.path.join(REPO, "build")

# A peer that prints what torch_baseline.py prints; its speed depends on its flags, so that each peer differs.
FAKE_PEER = r'''
import json, sys
args = sys.argv[1:]
if "--float8" in args and args[args.index("--float8") + 1] == "rowwise":
    print("Traceback: compile failed", flush=True); sys.exit(3)
tok = 1000.0 * (2 if "--compile" in args else 1) * (1.5 if "--float8" in args else 1)
print("some log line")
print(json.dumps(dict(peer="pytorch", model=args[args.index("--model") + 1], tokens_per_s_per_gpu=tok,
                      peak_alloc_gib=0.5, peak_reserved_gib=0.75, device="fake GPU")))
'''


class BenchPeers(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.peer = os.path.join(self.tmp.name, "peer.py")
        with open(self.peer, "w") as f:
            f.write(FAKE_PEER)

    def tearDown(self):
        self.tmp.cleanup()

    def bench(self, peers, recipes="fp32,bf16"):
        out_json = os.path.join(self.tmp.name, "rows.json")
        p = subprocess.run([sys.executable, SCRIPT, "--config", CONFIG, "--recipes", recipes, "--set", "train.device=cpu",
                            "--peer-model", "tinyllama1b", "--peers", peers, "--steps", "1", "--warmup", "0",
                            "--coat-bench", os.path.join(BUILD, "coat-bench"), "--peer-script", self.peer,
                            "--json", out_json], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=300)
        rows = None
        if os.path.exists(out_json):
            with open(out_json) as f:
                rows = json.load(f)
        return p.returncode, p.stdout, rows

    def test_ratios_are_ours_over_each_peer(self):
        rc, out, rows = self.bench("eager,compile,float8_tensorwise")
        self.assertEqual(rc, 0, out)
        self.assertEqual([r["name"] for r in rows], ["coat-train fp32", "coat-train bf16", "pytorch eager",
                                                     "pytorch compile", "pytorch float8_tensorwise"])
        peers = {r["peer"]: r for r in rows if r.get("kind") == "peer"}
        self.assertEqual([peers[p]["tokens_per_s"] for p in ("eager", "compile", "float8_tensorwise")],
                         [1000.0, 2000.0, 3000.0])
        lines = out.splitlines()
        for r in rows[:2]:
            self.assertGreater(r["tokens_per_s"], 0)
            self.assertGreater(r["peak_alloc_gib"], 0)
            line = next(l for l in lines if l.startswith(f"| {r['name']} |"))
            for p in peers.values():
                want = f"{r['tokens_per_s'] / p['tokens_per_s']:.3f}x, memory {r['peak_alloc_gib'] / 0.5:.2f}x"
                self.assertIn(want, line)
        self.assertIn("device: cpu; fake GPU", out)

    def test_a_failed_peer_is_reported_and_the_rest_still_run(self):
        rc, out, rows = self.bench("float8_rowwise,compile", recipes="fp32")
        self.assertEqual(rc, 1, out)
        self.assertIn("| pytorch float8_rowwise | failed: exit status 3 |", out)
        self.assertIn("Traceback: compile failed", out)
        self.assertEqual(rows[2]["tokens_per_s"], 2000.0)
        self.assertIn("x pytorch compile", out.splitlines()[0])
        self.assertNotIn("x pytorch float8_rowwise", out.splitlines()[0])

    def test_a_failed_recipe_is_reported(self):
        rc, out, rows = self.bench("compile", recipes="no_such_recipe,fp32")
        self.assertEqual(rc, 1, out)
        self.assertTrue(rows[0]["error"].startswith("exit status"), rows[0])
        self.assertIn("no_such_recipe", out)
        self.assertGreater(rows[1]["tokens_per_s"], 0)

    def test_a_recipe_takes_overrides_of_its_own(self):
        # The override after '+' goes to that run only: the bad key fails it, the plain recipe beside it runs.
        rc, out, rows = self.bench("compile", recipes="fp32+train.no_such_key=1,fp32")
        self.assertEqual(rc, 1, out)
        self.assertEqual(rows[0]["name"], "coat-train fp32+train.no_such_key=1")
        self.assertIn("no_such_key", rows[0]["tail"])
        self.assertEqual(rows[1]["name"], "coat-train fp32")
        self.assertGreater(rows[1]["tokens_per_s"], 0)

    def test_a_malformed_override_is_refused_before_anything_runs(self):
        rc, out, rows = self.bench("compile", recipes="fp32+train.deterministic")
        self.assertEqual(rc, 2)
        self.assertIn("an override after '+' is section.key=value", out)
        self.assertIsNone(rows)

    def test_unknown_peer_is_refused_before_anything_runs(self):
        rc, out, rows = self.bench("compile,float16")
        self.assertEqual(rc, 2)
        self.assertIn("unknown float16", out)
        self.assertIsNone(rows)


if __name__ == "__main__":
    if not os.access(os.path.join(BUILD, "coat-bench"), os.X_OK):
        print(f"skipped: {BUILD}/coat-bench is not built")
        sys.exit(77)
    unittest.main()
