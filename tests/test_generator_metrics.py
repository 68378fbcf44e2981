"""Generator quality report on SynthFaces (Fréchet distance in a domain network's feature space)."""
import torch

from clcae.metrics.generator import generator_fd_report
from clcae.networks.domain import DomainNet
from clcae.networks.stylegan2 import Generator


def test_generator_fd_report_runs_and_real_sets_are_closer():
    torch.manual_seed(0)
    G = Generator(64, 32, 2, channel_base=256, channel_max=16).eval()  # untrained: far from real renders
    net = DomainNet().eval()
    report = generator_fd_report(G, net.features, n=16, batch=16)
    assert set(report) == {"fd_generated_vs_test", "fd_real_vs_real", "n", "truncation"}
    assert 0 <= report["fd_real_vs_real"] < report["fd_generated_vs_test"]
