"""Explanation: which pixels made the network decide (Captum and grad-cam attributions on the raw [0, 1] image),
whether to trust those maps (sanity checks, deletion/insertion), and what a channel wants to see.

    attribution   attribute, attribute_many, METHODS, option_defaults, colormap, overlay
    sanity        sanity_check (cascading randomisation, Adebayo et al. 2018), randomize, spearman, ssim
    faithfulness  deletion_insertion, faithfulness_table, baseline_image
    featurevis    visualize_channel (optimised from noise), channel_scores, top_activating
    influence     proponents_opponents, influence_for_checkpoint, train_features, cached_train_features (TracIn on the final layer,
                  in closed form, equal to captum.influence's TracInCPFast: the training images that pushed a
                  prediction, for and against; a query is two matrix-vector products over cached features)

A new attribution method goes in attribution (METHODS and its options); tests: tests/test_attribution.py,
tests/test_teach_sanity.py, tests/test_faithfulness.py, tests/test_teach_featurevis.py, tests/test_influence.py.
"""
