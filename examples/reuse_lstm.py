"""The motivating scenario: pretrain an LSTM in one model, reuse its weights in a different one.

    python examples/reuse_lstm.py pretrain pretrained.pt     # a classifier with an LSTM encoder, trained briefly
    python examples/reuse_lstm.py init downstream.pt         # a different model (a tagger), freshly initialized
    ckptsurgeon graft pretrained.pt --into downstream.pt --map 'encoder/rnn=lstm' -o warm.pt
    python examples/reuse_lstm.py check warm.pt pretrained.pt
"""
from __future__ import annotations

import sys

import torch


class Classifier(torch.nn.Module):
    """The pretraining model: embedding -> 2-layer bidirectional LSTM encoder -> class logits."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 16)
        self.encoder = torch.nn.Module()
        self.encoder.rnn = torch.nn.LSTM(16, 32, num_layers=2, bidirectional=True, batch_first=True)
        self.classify = torch.nn.Linear(64, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.encoder.rnn(self.embed(tokens))
        return self.classify(out[:, -1])


class Tagger(torch.nn.Module):
    """The downstream model: other embeddings, the same LSTM shape, a per-token head."""

    def __init__(self) -> None:
        super().__init__()
        self.words = torch.nn.Embedding(50, 16)
        self.lstm = torch.nn.LSTM(16, 32, num_layers=2, bidirectional=True, batch_first=True)
        self.tags = torch.nn.Linear(64, 7)


def pretrain(path: str) -> None:
    torch.manual_seed(0)
    model = Classifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    tokens = torch.randint(0, 50, (32, 12))
    labels = tokens.sum(1) % 3
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(tokens), labels).backward()
        opt.step()
    torch.save(model.state_dict(), path)
    print(f"pretrained classifier saved to {path}")


def init(path: str) -> None:
    torch.manual_seed(1)
    torch.save(Tagger().state_dict(), path)
    print(f"fresh tagger saved to {path}")


def check(warm: str, pretrained: str) -> None:
    tagger = Tagger()
    tagger.load_state_dict(torch.load(warm, weights_only=True), strict=True)
    classifier = Classifier()
    classifier.load_state_dict(torch.load(pretrained, weights_only=True), strict=True)
    x = torch.randn(4, 9, 16)
    same = torch.allclose(tagger.lstm(x)[0], classifier.encoder.rnn(x)[0], atol=0)
    torch.manual_seed(1)
    untouched = torch.equal(tagger.tags.weight, Tagger().tags.weight)
    print(f"tagger loads strictly; its LSTM computes the pretrained encoder's outputs: {same}; "
          f"its own head kept its initialization: {untouched}")
    if not (same and untouched):
        raise SystemExit(1)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"pretrain": pretrain, "init": init, "check": check}[command](*args)
