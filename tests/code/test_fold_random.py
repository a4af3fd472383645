"""fastai's random draws during a fold come from a seeded generator of their own."""

import os
import random

import fastai.data.load
import fastai.vision.augment

from foldwise.tasks.train import fastai_random


def augment_draws() -> list[float]:
    rng = fastai.vision.augment.random
    return [rng.uniform(0, 1), rng.randint(0, 1000), rng.random()]


def test_other_users_of_global_random_do_not_change_fastai_draws():
    with fastai_random(7):
        undisturbed = augment_draws()
    with fastai_random(7):
        random.getrandbits(32)  # what a websocket ping in a Prefect thread does
        random.random()
        disturbed = augment_draws()
    with fastai_random(8):
        other_seed = augment_draws()
    assert undisturbed == disturbed != other_seed
    assert fastai.vision.augment.random is random and fastai.data.load.random is random


def test_forked_data_workers_draw_from_their_own_seeded_global_random():
    with fastai_random(7):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # a DataLoader worker: fastai seeds the global random per worker
            random.seed(123)
            os.write(write, repr(augment_draws()).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        child = os.read(read, 1000).decode()
    random.seed(123)
    assert child == repr([random.uniform(0, 1), random.randint(0, 1000), random.random()])
