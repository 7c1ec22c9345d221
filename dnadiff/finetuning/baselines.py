"""The two baselines reported beside every fine-tuning run, on the same folds.

* ``KmerLogReg``: 6-mer counts (sparse, k-mers with an N are skipped), log(1+count) with rows
  scaled to unit L2 norm, then scikit-learn logistic regression (dnadiff.eval.sequence_metrics.KmerClassifier).
* ``GBCNN``: the small CNN of the Genomic Benchmarks paper (embedding 100, three conv blocks of
  16/8/4 channels with kernel 8, batch norm and max-pool 2, dense 512, output), trained with
  Adam (lr 1e-3) and cross-entropy; the best epoch is chosen on the validation split.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dnadiff.data.tokenizer import EMBED_SIZE, encode_batch
from dnadiff.eval.fit import fit_cross_entropy
from dnadiff.eval.sequence_metrics import KmerClassifier


class KmerLogReg(KmerClassifier):
    """The fine-tuning k-mer baseline: :class:`KmerClassifier` on ``k``-mer log-counts (rows at unit L2 norm).
    ``fit(seqs, labels, num_classes)`` then ``predict_proba(seqs) -> float[N, K]``."""

    def __init__(self, k: int = 6, C: float = 1.0, max_iter: int = 2000, seed: int = 0):
        super().__init__(ks=(k,), max_iter=max_iter, C=C, features="log_count", seed=seed)


class GBCNN(nn.Module):
    """The Genomic Benchmarks CNN: LongTensor[B, L] token ids -> logits FloatTensor[B, K]."""

    def __init__(self, num_classes: int, input_len: int, embedding_dim: int = 100):
        super().__init__()
        self.embeddings = nn.Embedding(EMBED_SIZE, embedding_dim)
        self.conv1 = nn.Conv1d(embedding_dim, 16, kernel_size=8)
        self.rest = nn.Sequential(
            nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(16, 8, kernel_size=8), nn.BatchNorm1d(8), nn.MaxPool1d(2),
            nn.Conv1d(8, 4, kernel_size=8), nn.BatchNorm1d(4), nn.MaxPool1d(2),
            nn.Flatten(),
        )
        flat = self.rest(torch.zeros(2, 16, input_len - 7)).shape[1]
        self.dense = nn.Sequential(nn.Linear(flat, 512), nn.Linear(512, num_classes))

    def first_conv(self, tokens: torch.Tensor) -> torch.Tensor:
        """conv1(embeddings(tokens)) as a convolution of the one-hot tokens with the folded weight
        ``W_eff[o, v, k] = sum_i W[o, i, k] E[v, i]``: the same function and gradients of the same
        parameters, with 7 input channels instead of 100 (about 14x cheaper on CPU).
        LongTensor[B, L] -> FloatTensor[B, 16, L - 7]."""
        onehot = nn.functional.one_hot(tokens, EMBED_SIZE).to(self.conv1.weight.dtype).transpose(1, 2)
        weight = torch.einsum("oik,vi->ovk", self.conv1.weight, self.embeddings.weight)
        return nn.functional.conv1d(onehot, weight, self.conv1.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.dense(self.rest(self.first_conv(tokens)))


def _padded(seqs: list[str], length: int) -> torch.Tensor:
    return encode_batch(seqs, length)[0]


def _cnn_probs(model: GBCNN, tokens: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        out = [torch.softmax(model(tokens[i : i + batch_size]), -1) for i in range(0, len(tokens), batch_size)]
    return torch.cat(out).numpy()


#: shortest input the three conv(8) + max-pool(2) blocks accept is 57; shorter inputs are padded.
CNN_MIN_LENGTH = 64


class CNNBaseline:
    """Train the GB CNN on one fold: ``fit(train, val)`` keeps the best-validation-accuracy epoch.

    Sequences are padded (PAD) or cut to ``max(input_len, CNN_MIN_LENGTH)``."""

    def __init__(self, num_classes: int, input_len: int, epochs: int = 10, batch_size: int = 64, lr: float = 1e-3, seed: int = 0):
        self.num_classes, self.input_len = num_classes, max(input_len, CNN_MIN_LENGTH)
        self.epochs, self.batch_size, self.lr, self.seed = epochs, batch_size, lr, seed

    def fit(self, seqs: list[str], labels: np.ndarray, val_seqs: list[str], val_labels: np.ndarray) -> "CNNBaseline":
        """Train on ``seqs`` / int ``labels``[N]; keep the epoch of best accuracy on ``val_seqs`` / ``val_labels``."""
        torch.manual_seed(self.seed)
        model = GBCNN(self.num_classes, self.input_len)
        tokens, targets = _padded(seqs, self.input_len), torch.as_tensor(labels, dtype=torch.long)
        val_tokens = _padded(val_seqs, self.input_len)

        def val_accuracy(net: GBCNN) -> float:
            return float((_cnn_probs(net, val_tokens).argmax(1) == np.asarray(val_labels)).mean())

        self.model = fit_cross_entropy(model, [tokens], targets, self.epochs, self.batch_size, self.lr, self.seed,
                                       min_batch=2, select=val_accuracy)
        return self

    def predict_proba(self, seqs: list[str]) -> np.ndarray:
        """Class probabilities float[N, K]."""
        return _cnn_probs(self.model, _padded(seqs, self.input_len))
