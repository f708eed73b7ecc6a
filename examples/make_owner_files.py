"""SIMULATION ONLY: give each player a CSV file of its own, as a real federation's owners already have.

    python examples/make_owner_files.py /tmp/owners --owners 3 && fl up --data /tmp/owners

Writes DIR/data-owner-<i>/records.csv (a share of scikit-learn's breast cancer data,
standardised as the owners agreed) and DIR/model-owner/records.csv (the test set).
"""

import argparse
import csv
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
arguments.add_argument("directory", type=Path)
arguments.add_argument("--owners", type=int, default=3)
args = arguments.parse_args()

x, y = load_breast_cancer(return_X_y=True)
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
mean, std = x_train.mean(axis=0), x_train.std(axis=0)
files = {f"data-owner-{i}": part for i, part in enumerate(np.array_split(np.arange(len(y_train)), args.owners))}
for name, rows in [*((name, (x_train[part], y_train[part])) for name, part in files.items()), ("model-owner", (x_test, y_test))]:
    features, labels = rows
    path = args.directory / name / "records.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow([*(f"f{i}" for i in range(features.shape[1])), "label"])
        for row, label in zip((features - mean) / std, labels):
            writer.writerow([*(f"{value:.6f}" for value in row), int(label)])
    print(f"{path}: {len(labels)} records")
