"""Errors a user can cause and fix. The CLI prints their message as one line and exits 2."""


class CnnlabError(Exception):
    """Bad input from the user: a message that says what is wrong and what to do."""


class SpecError(CnnlabError):
    """A network description that cannot be built (unknown layer, impossible shapes)."""


class DataError(CnnlabError):
    """A data set that cannot be found, verified or read."""


class CheckpointError(CnnlabError):
    """A file that is not a readable cnnlab checkpoint."""


class Interrupted(CnnlabError):
    """The user stopped a run (Ctrl-C); what was finished is saved."""

    exit_status = 130
