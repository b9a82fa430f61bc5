"""Training: the loop that turns a TrainConfig (cnnlib.config, the one place a default lives) into a checkpoint,
and the background jobs that let the dashboard start, watch, cancel and resume a run.

    train      get_args_parser, train_one_epoch, evaluate, run, main (`cnnlib train`)
    optim      build_optimizer, WeightEMA, Lookahead, whiten_init_
    precision  resolve (fp32 or bf16 autocast, by measurement), measure, describe_device
    plots      save_training_plot (training_results.png)
    jobs       TrainingJobs, Job: a run in a background process owned by the dashboard's server
    jobcheck   check_settings, check_name, check_resume, check_data: settings checked before a start
    joblog     progress, outcome, lines, read_tail: reading what a run leaves
    procs      spawn, alive, signal_group, pid_lock: Linux process life

Tests: tests/test_train.py, tests/test_precision.py, tests/test_jobs.py.
"""
