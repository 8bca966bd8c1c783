"""The performance comparison's own checks (benchmarks/baselines.py,
benchmarks/compare.py): our Python rendering of the networks computes the
reference networks' logits and Captum's IG, and the one command runs end to
end and finds the service's IG equal to the baseline's. And the trained-BiT
measurement of docs/FAITHFULNESS.md (benchmarks/trained_bit.py) runs end to
end, its checkpoint read by path-scan as the network it trained; and the
completeness-gap survey (benchmarks/gap_survey.py) runs on two images."""

import json
import os
import subprocess
import sys
import unittest

import torch

import reference_models as rm

BENCHMARKS = os.path.join(rm.REPO, "benchmarks")
sys.path.insert(0, BENCHMARKS)

import baselines  # noqa: E402
import compare  # noqa: E402


def run_json(test, script, *args):
    """Runs benchmarks/`script` with args and --json; fails `test` unless it
    exits 0, and returns what it printed, parsed."""
    done = subprocess.run([sys.executable, os.path.join(BENCHMARKS, script), *args, "--json"],
                          capture_output=True, text=True, timeout=600)
    test.assertEqual(done.returncode, 0, done.stderr[-2000:])
    return json.loads(done.stdout)


class Baselines(unittest.TestCase):
    def test_our_python_networks_are_the_reference_ones(self):
        for name in ("bit-m-r50x1", "lanet-c16-l8"):
            with self.subTest(name):
                ref, forward, weights = baselines.load(name)
                x = rm.normalized_input(ref)
                with torch.no_grad():
                    logits = forward(weights, x)[0]
                    zero = forward(weights, torch.zeros_like(x))[0]
                torch.testing.assert_close(logits, torch.tensor(ref["expected_logits_eval"]), rtol=1e-4, atol=1e-5)
                torch.testing.assert_close(zero, torch.tensor(ref["expected_logits_zero_input_eval"]), rtol=1e-4,
                                           atol=1e-5)
                captum = torch.tensor(ref["expected_integrated_grads"]["integrated_grads_chw"])
                ig = baselines.integrated_gradients(forward, weights, x, torch.zeros_like(x), 50, 3)[0].detach()
                self.assertLess((ig - captum).abs().max().item(), 1e-3 * captum.abs().max().item())
                # The original method's second pass is the same IG; its first gives the per-step gradients.
                again, directional = baselines.original(forward, weights, x, torch.zeros_like(x), 50, 3)
                self.assertTrue(torch.equal(again[0].detach(), ig))
                self.assertEqual(tuple(directional.shape), (50, 3, 32, 32))

    def test_the_weights_are_parameters_as_in_a_loaded_model(self):
        _, _, weights = baselines.load("bit-m-r50x1")
        self.assertTrue(weights["root.conv.weight"].requires_grad)
        _, _, weights = baselines.load("lanet-c16-l8")
        self.assertTrue(weights["stem.0.weight"].requires_grad)
        self.assertFalse(weights["stem.1.running_mean"].requires_grad)


class Compare(unittest.TestCase):
    def test_one_model_end_to_end(self):
        result = run_json(self, "compare.py", "--models", "bit-m-r50x1", "--repeats", "1")
        self.assertEqual(sorted(result["dense_gflops"]), ["conv 1x1", "torch.mm"])
        self.assertTrue(all(rate > 0.0 for rate in result["dense_gflops"].values()))
        self.assertEqual(result["baseline_malloc"], "tcmalloc")  # baselines.py saw it in its own maps
        (row,) = result["models"]
        self.assertEqual(row["model"], "bit-m-r50x1")
        for key in ("original_s", "captum_s", "service_s", "engine_s", "engine_gflops"):
            self.assertGreater(row[key], 0.0, key)
        # The service's attribution is computed in it, not beside it: its parts fit in the client's time.
        parts = row["service_parts_s"]
        self.assertLess(parts["attribute"], parts["compute"] + 1e-6)
        self.assertLess(parts["compute"] + parts["gateway"], row["service_s"])
        self.assertLess(row["ig_max_error_vs_captum"], 1e-3)
        self.assertGreater(row["peak_mb"]["worker"], 100.0)
        self.assertEqual(row["batch"], 50)  # BiT-R50x1 fits the CPU budget in one batch
        # No kernel outruns multiply-adds in registers: a peak under what the convolutions and the engine
        # reach would be a miscount of the probe's FLOPs or time.
        peak = result["fma_peak_gflops"]
        self.assertGreater(peak, max(result["dense_gflops"].values()))
        self.assertGreater(peak, row["engine_gflops"])
        tables = compare.render(result)  # what the command prints without --json
        self.assertEqual(tables.count("| bit-m-r50x1 |"), 2)
        self.assertIn("ceiling vs original", tables)


@unittest.skipUnless(os.path.exists(rm.CIFAR10_TEST_ZIP), "needs ../shared/data/cifar10 (its README)")
class TrainedBit(unittest.TestCase):
    def test_a_few_steps_end_to_end(self):
        result = run_json(self, "trained_bit.py", "--steps", "3", "--images", "1", "--log-gl", "20")
        self.assertEqual(result["steps"], 3)
        self.assertTrue(0.0 <= result["held_out_accuracy"] <= 1.0)
        self.assertEqual([i["image"] for i in result["images"]], ["test/airplane/0000.jpg"])
        for image in result["images"]:
            # The worker read the trained checkpoint as the network our Python rendering trained. (At the
            # zero baseline the root convolution gives exact zeros and the GroupNorms after it see maps that
            # are nearly constant, so there the two differ by rounding up to ~1e-4: 1e-3 there.)
            self.assertAlmostEqual(image["f_x"], image["python_f_x"], delta=1e-4 * max(1.0, abs(image["f_x"])))
            self.assertAlmostEqual(image["f_baseline"], image["python_f_baseline"],
                                   delta=1e-3 * max(1.0, abs(image["f_baseline"])))
            self.assertEqual(len(image["log_gl_gap"]), 1)
            for method in ("gausslegendre", "scan"):
                self.assertEqual(len(image["gap_fraction"][method]), len(result["n_steps"]))
        self.assertEqual(sorted(result["summary"]), ["gausslegendre", "scan"])


@unittest.skipUnless(os.path.exists(rm.CIFAR10_TEST_ZIP), "needs ../shared/data/cifar10 (its README)")
class GapSurvey(unittest.TestCase):
    def test_two_images_of_the_default_model(self):
        result = run_json(self, "gap_survey.py", "--images", "2", "--threads", "1")
        self.assertEqual([i["image"] for i in result["images"]], ["test/airplane/0000.jpg", "test/automobile/0000.jpg"])
        self.assertIn("gausslegendre", result["summary"])
        self.assertIn("scan", result["summary"])
        for method, stats in result["summary"].items():
            gaps = [i["gap_fraction"][method] for i in result["images"]]
            for k in range(len(result["n_steps"])):
                column = [g[k] for g in gaps]
                self.assertTrue(all(g >= 0.0 for g in column))
                self.assertAlmostEqual(stats["largest"][k], max(column))
                self.assertAlmostEqual(stats["median"][k], sum(column) / 2)
                self.assertAlmostEqual(stats["under_target"][k], sum(g < 0.01 for g in column) / 2)
        # Gauss-Legendre converges on the default model (docs/FAITHFULNESS.md): 200 points beat 10.
        gl = result["summary"]["gausslegendre"]["median"]
        self.assertLess(gl[-1], gl[0])


if __name__ == "__main__":
    unittest.main()
