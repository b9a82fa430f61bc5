"""Diagnosis: where the model is wrong and the evidence for why: metrics and error queries, labels the model
contradicts, the training images nearest a prediction, maps of feature space, and two models compared.

    evaluate    run_split, predictions_for, compute_report, confusion_matrix, calibration, query_misclassified,
                query_cell, evaluate_main (`cnnlib evaluate`)
    labels      label_issues, label_issues_for (confident learning through cleanlab)
    neighbors   build_index, index_for_checkpoint, neighbors_of, Index (memory-mapped feature index)
    projection  project (PCA, t-SNE, UMAP), embedding, embedding_for_checkpoint, subsample
    compare     compare, compare_checkpoints, mcnemar, selection_csv, split_paths

A new diagnosis goes here, beside the signals it reads; tests: tests/test_evaluate.py, tests/test_labels.py,
tests/test_neighbors.py, tests/test_projection.py, tests/test_compare.py.
"""
