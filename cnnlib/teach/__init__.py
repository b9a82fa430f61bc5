"""Teaching CNN internals on the learner's own model: every number of a unit's forward pass, the image through
every layer, what the training loop sees, and a toy convolution, each from the real model.

    arithmetic  unit_arithmetic (patch x kernel, bias, BatchNorm, activation, pool, each beside the hooked
                value), head_arithmetic (the last Linear and the softmax), leaf_trace, own_image
    strip       layer_strip: a few of the most active channels of every layer, down to the class scores
    batch       training_batch_steps: crop, flip and normalisation under the checkpoint's recipe
    toy         conv_output_size, toy_convolution (kernel, stride and padding on a small grid)

Every function takes a loaded model and one image x01 (C, H, W) in [0, 1] and leaves the model alone (a
private copy from cnnlib.modelops). Tests: tests/test_teach.py, tests/test_teach_arithmetic.py.
"""
