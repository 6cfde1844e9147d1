"""Callbacks: code that ``Sequential.fit`` runs as training begins and ends, and around every epoch.

Each callback sees the epoch's ``logs`` (``{"loss": ..., "accuracy": ...,
"val_loss": ..., "val_accuracy": ...}``) and may look at or change the model:
stop training (``model.stop_training = True``), save it, or change the
optimiser's learning rate. The hooks follow Keras's names.
"""
import collections.abc
import csv
import math
import os
import string

from .utils import atomic_path, check_choice, check_flag, file_path, finite_float, is_int


def _count(owner, name, value):
    """``value`` as a non-negative int (a number of epochs), or a ``ValueError`` naming ``owner`` and ``name``."""
    if not is_int(value) or value < 0:
        raise ValueError(f"{owner}: {name} must be a non-negative int (epochs), got {value!r}")
    return int(value)


class Callback:
    """Base class; override the hooks you need. ``self.model`` is set by ``fit``."""

    model = None

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def check_log_keys(self, keys):
        """Called by ``fit`` before the first epoch with the names every epoch's logs will hold.

        A callback raises here what would otherwise fail after an epoch of
        training: a value the logs will lack (``ValueError``), a model that
        ``ModelCheckpoint`` could not save.
        """


class History(Callback):
    """Records every epoch's logs: ``history.history["val_loss"][e]`` is epoch ``e``'s validation loss.

    ``fit`` always adds one and returns it.
    """

    def __init__(self):
        self.history = {}
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)


class _Monitor(Callback):
    """Shared logic of callbacks that watch one quantity for improvement.

    ``mode="auto"`` maximises a quantity whose name contains ``acc``,
    ``kappa`` or ``auc`` and minimises anything else (losses; pass
    ``mode="max"`` for, say, ``val_f1``).
    An epoch improves on the best so far when it beats it by more than ``min_delta``.

    Each subclass keeps its counters in ``observe(value)``, which takes one
    epoch's monitored value and says whether to act (stop, save, lower the
    rate); ``on_epoch_end`` acts. Keeping the two apart is what lets
    :meth:`catch_up` replay the epochs of an interrupted run without acting.
    """

    def __init__(self, monitor="val_loss", mode="auto", min_delta=0.0):
        owner = type(self).__name__
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"{owner}: monitor must be the name of a log value, e.g. 'val_loss', got {monitor!r}")
        if not isinstance(mode, str) or mode not in ("auto", "min", "max"):
            raise ValueError(f"{owner}: mode must be 'auto', 'min' or 'max', got {mode!r}")
        delta = finite_float(min_delta)
        if delta is None:
            raise ValueError(f"{owner}: min_delta must be a finite number, got {min_delta!r}")
        if mode == "auto":
            mode = "max" if "acc" in monitor or "kappa" in monitor or "auc" in monitor else "min"
        self.monitor = monitor
        self.mode = mode
        self.min_delta = abs(delta)
        self._past_values = []
        self.reset()

    def reset(self):
        """Forget every epoch seen: the state of a new training run."""
        self.best = math.inf if self.mode == "min" else -math.inf

    def catch_up(self, past_logs):
        """Count the epochs an interrupted run already trained, for resuming it.

        ``past_logs`` are those epochs' logs, oldest first (the rows of its
        :class:`CSVLogger` file, say). The callback then carries on from the
        state they left: the best value so far, the epochs waited. Nothing is
        acted on again: no learning rate is lowered twice.
        """
        self._past_values = [float(self.current(logs)) for logs in self._checked_past_logs(past_logs)]
        self._replay()

    def _checked_past_logs(self, past_logs):
        """``past_logs`` as a list of dicts (read once: it may be a generator), else a ``TypeError``."""
        if isinstance(past_logs, (str, bytes)) or not isinstance(past_logs, collections.abc.Iterable):
            raise TypeError(f"{type(self).__name__}.catch_up: past_logs must be a list of the epochs' logs (dicts), "
                            f"oldest first, got {type(past_logs).__name__}")
        past_logs = list(past_logs)
        if not all(isinstance(logs, collections.abc.Mapping) for logs in past_logs):
            raise TypeError(f"{type(self).__name__}.catch_up: each epoch's logs must be a dict of log values")
        return past_logs

    def _replay(self):
        """Reset, then observe the caught-up epochs; True if the last of them called for action."""
        self.reset()
        acted = False
        for value in self._past_values:
            acted = self.observe(value)
        return acted

    def observe(self, value):
        raise NotImplementedError

    def check_log_keys(self, keys):
        if self.monitor not in keys:
            raise ValueError(f"{type(self).__name__}: monitors {self.monitor!r}, but fit's epoch logs will hold "
                             f"only {sorted(keys)}" + (" (val_* values need validation_data)"
                                                       if self.monitor.startswith("val_") else ""))

    def current(self, logs):
        """The monitored value in ``logs``; ``KeyError`` naming what is available if absent."""
        logs = logs or {}
        if self.monitor not in logs:
            raise KeyError(
                f"{type(self).__name__}: monitors {self.monitor!r}, but the epoch logs only have "
                f"{sorted(logs)} (val_* values need validation_data)"
            )
        return logs[self.monitor]

    def improved(self, value):
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved for ``patience`` epochs in a row (Keras's rule).

    With ``restore_best_weights=True`` the model ends with the weights of its
    best epoch rather than its last. Each ``fit`` starts counting afresh,
    from the epochs given to :meth:`catch_up` if any. ``verbose=1`` (or 2)
    prints a line when it stops training and when it restores weights, as
    Keras's does.
    """

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto", restore_best_weights=False,
                 verbose=0):
        super().__init__(monitor, mode, min_delta)
        self.patience = _count("EarlyStopping", "patience", patience)
        self.restore_best_weights = check_flag("EarlyStopping", "restore_best_weights", restore_best_weights)
        self.verbose = check_choice("EarlyStopping", "verbose", verbose, (0, 1, 2))
        self.best_weights = None
        self.best_epoch = None  # of this fit, counted from 0 (the weights restore_best_weights keeps)
        self.stopped_epoch = None

    def reset(self):
        super().reset()
        self.wait = 0

    def catch_up(self, past_logs):
        if self.restore_best_weights:
            raise ValueError("EarlyStopping: restore_best_weights cannot resume an interrupted run, whose "
                             "best weights were not kept; load them from its ModelCheckpoint instead")
        super().catch_up(past_logs)

    def observe(self, value):
        """Count one epoch; True when ``patience`` epochs have passed without improvement."""
        if self.improved(value):
            self.best, self.wait = value, 0
            return False
        self.wait += 1
        return self.wait >= self.patience

    def on_train_begin(self, logs=None):
        self.best_weights = None
        self.best_epoch = None
        self.stopped_epoch = None
        if self._replay():  # the interrupted run had already stopped: so does this one, at once
            self.model.stop_training = True
            if self.verbose:
                print(f"EarlyStopping stops training at once: the epochs caught up on had no better {self.monitor} "
                      f"in their last {self.wait} epoch{'s' if self.wait != 1 else ''}")

    def on_epoch_end(self, epoch, logs=None):
        if self.observe(self.current(logs)):
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.verbose:
                print(f"Epoch {epoch + 1}: EarlyStopping stops training: no better {self.monitor} in its last "
                      f"{self.wait} epoch{'s' if self.wait != 1 else ''}")
        elif self.wait == 0:
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            if self.verbose:
                print(f"EarlyStopping restores the weights of epoch {self.best_epoch + 1}, of the best {self.monitor}")


class ModelCheckpoint(_Monitor):
    """Save the model to ``path`` after an epoch: every epoch, or only when ``monitor`` improves.

    The file name may contain ``{epoch}`` (1-based) and any log key, e.g.
    ``"ckpt-{epoch:02d}-{val_loss:.3f}.npz"``; the folders of ``path`` are
    taken as they are, braces included. The name's format is checked here; a
    key the logs will lack, and a model that ``save`` would refuse, when
    ``fit`` starts. ``save_best_only`` is True
    by default (Keras's default is False). Writes are atomic
    (``Sequential.save`` writes a temporary file and renames it), so a crash
    mid-save leaves the previous checkpoint intact. The best value is kept
    from one ``fit`` to the next, so a later run does not overwrite a better
    model with a worse one.
    """

    def __init__(self, path, monitor="val_loss", save_best_only=True, mode="auto", min_delta=0.0):
        super().__init__(monitor, mode, min_delta)
        self.path = file_path("ModelCheckpoint", "path", path)
        self.save_best_only = check_flag("ModelCheckpoint", "save_best_only", save_best_only)
        name = os.path.basename(self.path)
        try:
            fields = [field for _, field, _, _ in string.Formatter().parse(name) if field is not None]
            if any(not field.isidentifier() for field in fields):
                raise ValueError("fields must be named, as {epoch} or {val_loss}")
            name.format(**{field: 1 if field == "epoch" else 0.5 for field in fields})  # logs are floats
        except (ValueError, KeyError, IndexError) as error:  # a KeyError: a field inside a format spec
            problem = f"unknown field {error}" if isinstance(error, KeyError) else str(error)
            raise ValueError(f"ModelCheckpoint: the file name {name!r} is not a valid format: {problem}") from None
        self._name_fields = [field for field in fields if field != "epoch"]

    def check_log_keys(self, keys):
        if self.save_best_only:  # saving every epoch compares nothing
            super().check_log_keys(keys)
        missing = [field for field in self._name_fields if field not in keys]
        if missing:
            raise ValueError(f"ModelCheckpoint: the file name {os.path.basename(self.path)!r} names {missing}, "
                             f"but fit's epoch logs will hold only {sorted(keys)}")
        self.model._architecture_json()  # what save would refuse (a loss of one's own, say), before an epoch is spent

    def catch_up(self, past_logs):
        past_logs = self._checked_past_logs(past_logs)
        if self.save_best_only:  # saving every epoch has nothing to catch up on
            super().catch_up(past_logs)

    def observe(self, value):
        """True when ``value`` improves on the best so far (and becomes it)."""
        if self.improved(value):
            self.best = value
            return True
        return False

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only and not self.observe(self.current(logs)):
            return
        folder, name = os.path.split(self.path)
        try:
            name = name.format(epoch=epoch + 1, **logs)
        except KeyError as error:
            raise KeyError(f"ModelCheckpoint: the file name {name!r} names {error}, but the epoch logs only "
                           f"have {sorted(logs)}") from None
        self.model.save(os.path.join(folder, name))


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by ``factor`` when ``monitor`` stalls for ``patience`` epochs.

    The MURA paper divides the rate by 10 (``factor=0.1``) each time the
    validation loss plateaus, which the defaults follow (Keras's are
    ``patience=10``, ``min_delta=1e-4``). ``cooldown`` counts as in Keras: the
    ``cooldown - 1`` epochs after a reduction are not counted (so
    ``cooldown=1`` changes nothing); the rate never goes below ``min_lr``.
    Each ``fit`` starts counting afresh, from the epochs given to
    :meth:`catch_up` if any.
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=1, min_lr=0.0, min_delta=0.0,
                 cooldown=0, mode="auto", verbose=0):
        super().__init__(monitor, mode, min_delta)
        factor_value, min_lr_value = finite_float(factor), finite_float(min_lr)
        if factor_value is None or not 0.0 < factor_value < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be a number in (0, 1), got {factor!r}")
        if min_lr_value is None or min_lr_value < 0.0:
            raise ValueError(f"ReduceLROnPlateau: min_lr must be a number >= 0, got {min_lr!r}")
        self.factor, self.min_lr = factor_value, min_lr_value
        self.patience = _count("ReduceLROnPlateau", "patience", patience)
        self.cooldown = _count("ReduceLROnPlateau", "cooldown", cooldown)
        self.verbose = check_choice("ReduceLROnPlateau", "verbose", verbose, (0, 1, 2))

    def reset(self):
        super().reset()
        self.wait = 0
        self.cooldown_left = 0

    def observe(self, value):
        """Count one epoch; True when the rate is due to be lowered."""
        if self.cooldown_left > 0:  # (the wait is 0 already: set so by the cut that began the cooldown)
            self.cooldown_left -= 1
        if self.improved(value):
            self.best, self.wait = value, 0
            return False
        if self.cooldown_left > 0:
            return False
        self.wait += 1
        if self.wait < self.patience:
            return False
        # A reduction that min_lr stops changes no rate; its cooldown then changes nothing either.
        self.wait, self.cooldown_left = 0, self.cooldown
        return True

    def on_train_begin(self, logs=None):
        self._replay()

    def on_epoch_end(self, epoch, logs=None):
        if not self.observe(self.current(logs)):
            return
        optimizer = self.model.optimizer
        new_lr = max(optimizer.lr * self.factor, self.min_lr)
        if math.isclose(new_lr, self.min_lr, rel_tol=1e-9):  # 1e-5 * 0.1 is 1.0000000000000002e-06
            new_lr = self.min_lr
        if new_lr < optimizer.lr:
            if self.verbose:
                print(f"Epoch {epoch + 1}: ReduceLROnPlateau lowers the learning rate to {new_lr:.3g}")
            optimizer.lr = new_lr


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of each epoch: ``lr = schedule(epoch, lr)`` (Keras's callback).

    ``epoch`` counts from 0 (``initial_epoch`` for a resumed run), ``lr`` is
    the optimiser's current rate; ``schedule`` returns the epoch's rate, a
    finite number >= 0 (anything else is a ``ValueError`` naming the epoch,
    before the epoch trains). A step decay, say: ``lambda epoch, lr: 1e-3 *
    0.5 ** (epoch // 10)``. ``verbose=1`` (or 2) prints each change.
    """

    def __init__(self, schedule, verbose=0):
        if not callable(schedule):
            raise TypeError(f"LearningRateScheduler: schedule must be a function (epoch, lr) -> lr, "
                            f"got {type(schedule).__name__}")
        self.schedule = schedule
        self.verbose = check_choice("LearningRateScheduler", "verbose", verbose, (0, 1, 2))

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        value = self.schedule(epoch, optimizer.lr)
        lr = finite_float(value)
        if lr is None or lr < 0.0:
            raise ValueError(f"LearningRateScheduler: schedule({epoch}, {optimizer.lr!r}) returned {value!r}; "
                             "a learning rate is a finite number >= 0")
        if self.verbose and lr != optimizer.lr:
            print(f"Epoch {epoch + 1}: LearningRateScheduler sets the learning rate to {lr:.3g}")
        optimizer.lr = lr


class CSVLogger(Callback):
    """Append one row per epoch (``epoch`` and every log value) to a CSV file.

    Each row is flushed to disk as soon as its epoch ends, so an interrupted
    run keeps every finished epoch. ``append=True`` continues an existing file
    (resuming training); otherwise the file is started afresh.
    """

    def __init__(self, path, append=False):
        self.path = file_path("CSVLogger", "path", path)
        self.append = check_flag("CSVLogger", "append", append)
        self._file = self._writer = None
        self._fields = None  # the header's column names, once known

    def check_log_keys(self, keys):
        header = self._existing_header()
        missing = [] if header is None else [key for key in keys if key not in header]
        if missing:
            raise ValueError(f"CSVLogger: {self.path} has columns {header}, and fit's logs would add {missing}; "
                             "log to another file, or train as the run that wrote it did")

    def _existing_header(self):
        """The column names of the file that ``append`` continues, or None when it starts one."""
        if not (self.append and os.path.exists(self.path) and os.path.getsize(self.path) > 0):
            return None
        with open(self.path, newline="") as f:
            return next(csv.reader(f), None)

    def on_train_begin(self, logs=None):
        self._fields = self._existing_header()
        if self._fields is None:
            with atomic_path(self.path) as tmp:
                open(tmp, "w").close()
        self._file = open(self.path, "a", newline="")
        self._writer = csv.writer(self._file, lineterminator="\n")  # csv's default, "\r\n", trips Unix tools

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **(logs or {})}
        if self._fields is None:
            self._fields = list(row)
            self._writer.writerow(self._fields)
        missing = [key for key in row if key not in self._fields]
        if missing:
            raise ValueError(f"CSVLogger: {self.path} has columns {self._fields}, new logs add {missing}")
        self._writer.writerow([row.get(key, "") for key in self._fields])
        self._file.flush()
        os.fsync(self._file.fileno())

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
            self._file = None
