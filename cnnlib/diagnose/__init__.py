"""Diagnosis: where the model is wrong and the evidence for why: metrics and error queries, labels the model
contradicts, the training images nearest a prediction, maps of feature space, and two models compared.

    evaluate    run_split, predictions_for, compute_report, confusion_matrix, calibration, query_misclassified,
                query_cell, evaluate_main (`cnnlib evaluate`)
    labels      label_issues, label_issues_for (confident learning through cleanlab)
    features    split_features, features_for_checkpoint, checkpoint_feature_key (one pass per checkpoint and split:
                the penultimate features every feature-space view reads, on disk), model_key, write_entry,
                read_entry (the disk format of every cached array)
    neighbors   build_index, index_name, index_from_store, index_for_checkpoint, neighbors_of, Index (memory-mapped feature index)
    projection  project (PCA, t-SNE, UMAP), embedding, embedding_for_checkpoint, subsample
    compare     compare, compare_checkpoints, mcnemar, selection_csv, split_paths
    calibration fit_temperature, fit_temperature_logits, temperature_report, apply_temperature, save_temperature,
                stored_temperature, calibrate_main (`cnnlib calibrate`: temperature scaling on the validation split)
    corruptions corrupt, corrupt_batch (CIFAR-10-C's 15 corruptions x 5 severities on a whole batch of images,
                the per-image definitions' results), CORRUPTIONS, SEVERITIES, P
    robustness  corrupt, robustness, robustness_for_checkpoint, format_table, robustness_main, cache_key (`cnnlib robustness`:
                accuracy under CIFAR-10-C's 15 corruptions x 5 severities, cached per checkpoint)
    triage      Rule, triage, triage_for_checkpoint, to_json, format_table, triage_main (`cnnlib triage`): a verdict
                (label error, ambiguous, out of distribution, model error) and its evidence per mistake;
                folder_test_files, cached_test_predictions (the test split's files and predictions, cached)
    slices      SliceConfig, find_slices, slices_for_checkpoint, format_slices, slices_main (`cnnlib slices`):
                groups of similar test images the model gets wrong far more often, worst first
    tags        tags_path, checkpoint_identity, clean_tag, load_tags, tags_for, set_tag: a tag per test image,
                kept in <checkpoint>.tags.json beside the checkpoint (refused when damaged or another checkpoint's)
    report      build_report, write_report, report_main (`cnnlib report`: one self-contained HTML file), ERRORS
    report_sections  the report's HTML sections: CSS, section, absent, summary_card, curves, confusion, per_class,
                calibration_section, errors_section, label_section, slices_section, robustness_section, pct

A new diagnosis goes here, beside the signals it reads; tests: tests/test_evaluate.py, tests/test_labels.py,
tests/test_neighbors.py, tests/test_projection.py, tests/test_compare.py, tests/test_triage.py,
tests/test_calibration.py, tests/test_robustness.py, tests/test_report.py, tests/test_tags.py.
"""
