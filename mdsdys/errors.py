"""The app's own exceptions: pages catch these and show their message with `st.error`."""


class MdsdysError(Exception):
    """Base class for every error the app shows to a user."""


class BadImageError(MdsdysError):
    """A file that cannot be used as an image; the message names the file and the reason."""


class UnsafeArchiveError(MdsdysError):
    """A zip upload that is corrupt, escapes its folder, or is too large or too full to unpack."""


class UploadTooLargeError(MdsdysError):
    """An upload larger than the app accepts."""


class SchemeError(MdsdysError):
    """A label scheme that is malformed or does not fit the slide or data."""


class NotFoundError(MdsdysError):
    """A slide, cell, user, scheme or model that does not exist."""


class AuthError(MdsdysError):
    """A login that failed: wrong name or password, or too many attempts."""


class PermissionDeniedError(MdsdysError):
    """The logged-in user's role does not allow this action."""


class StoreCorruptError(MdsdysError):
    """The label store file is damaged or is not a database."""


class ImportProblemError(MdsdysError):
    """An import that cannot start: a missing folder, or a layout the importer does not understand."""


class JobCancelled(MdsdysError):
    """Work stopped because a user cancelled it; nothing from the run was kept."""


class MaskError(MdsdysError):
    """A drawn or imported mask that cannot be saved: empty, or not the size of its field."""


class ScaleError(MdsdysError):
    """A nucleus diameter that cannot fit the field (it would blow the field up beyond reason)."""


class ScaleEstimateError(ScaleError):
    """No nuclei were found at any scale, so the nucleus diameter cannot be estimated."""


class TooFewMasksError(MdsdysError):
    """Not enough nucleus masks to train a segmenter."""


class TrainingDataError(MdsdysError):
    """Too few labelled cells to train: fewer cells than classes, or a class with too few examples."""


class TrainingCancelled(JobCancelled):
    """Training stopped between batches because should_stop() said so; nothing was saved."""


class NoCellsError(MdsdysError):
    """A slide with no cells to classify."""


class UnknownArchitectureError(MdsdysError):
    """An architecture name that is not in the registry."""


class CheckpointError(MdsdysError):
    """A checkpoint that cannot be written or read, or does not fit where it is used."""


class WrongModelError(CheckpointError):
    """A checkpoint of another kind of model (e.g. a classifier) where this kind is needed."""


class PromotionRefused(MdsdysError):
    """A promotion the gate refused; the message gives both scores."""


class ConflictError(MdsdysError):
    """Someone else changed the record while this user was looking at it; nothing was saved."""


class WeakPasswordError(MdsdysError):
    """A new password that is too short, too common or derived from the user name; the message says which."""


class BadUsernameError(MdsdysError):
    """A new user name that is malformed, reserved for the app, or looks like an existing account."""


class LastAdminError(PermissionDeniedError):
    """A change that would leave no active admin: promote another account to admin first."""


class ReadFrozenError(MdsdysError):
    """A blind read that its reader may no longer change: they have seen another reader's read of the cell."""


class SlideFormatError(MdsdysError):
    """A whole-slide file OpenSlide cannot read: an unsupported format, or a damaged file (the message names it)."""
