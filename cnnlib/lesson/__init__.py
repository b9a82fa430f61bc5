"""A checkpoint as a static, serverless lesson: a CNN Explainer for that very model, with exercises, that runs
in the student's own browser (onnxruntime-web, WebAssembly) from a folder on any static host or from one file.

    build       build_lesson (`cnnlib lesson CKPT --out DIR [--images N] [--title TEXT] [--single-file]`),
                lesson_main, render_page (the page's JSON and pictures: cnnlib.io.webpage)
    graph       trace_layout, export_lesson_onnx (ONNX whose extra outputs are every layer shown and whose inputs
                include every conv's kernels, stored once, in the payload), lesson_net, runner, torch_outputs,
                output_names, onnx_output_names, weight_inputs
    payload     lesson_payload: classes, preprocessing, layers with the parameters a unit's arithmetic needs,
                sampled test images, confusion matrix, saliency of mistakes, history, filters across epochs
    exercises   make_exercises: questions whose answers come from the model
    web/        the page (lesson.html, lesson.css, core.js, views.js, extra.js): vanilla JS, text only
    vendor/     onnxruntime-web (pinned; update_vendor.sh re-creates it from npm)

Importing the package imports no PyTorch. Tests: tests/test_lesson.py, tests/test_browser_lesson.py.
"""
