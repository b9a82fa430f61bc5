"""The data path: datasets by name or folder become uint8 arrays, decoded once into memory-mapped caches.
Images of any format are decoded safely and fitted the torchvision way; a checkpoint finds its own data.

    datasets   load_dataset (train/val/test splits of a named dataset or an ImageFolder), torchvision_split,
               augment_batch, channel_stats, resolve_root, resolve_path, missing_dataset_message, NAMED
    spec       a checkpoint's data: checkpoint_data_spec -> DataSpec, load_checkpoint_split, folder_split,
               missing_data_help (one sentence), skipped_files (undecodable files left out), DataMismatch
    cache      decoded splits on disk: cached_split, read_split, write_split, decode_files, folder_layout, scan,
               unreadable and skipped_sentence (undecodable files skipped, said in one line), release_rows,
               preprocessing_for
    images     load_image (any mode, size, EXIF, bombs refused), fit_image, to_uint8_chw, to_model_input

A new dataset format goes in datasets (a name in NAMED) or cache (a folder layout); tests: tests/test_data.py,
tests/test_images.py, tests/test_files.py.
"""
