"""The model zoo: every family registers its models here; `create` builds any of them by name."""

from cnnjax.models.registry import (ModelSpec, create, get_spec, list_models, register,
                                    require_min_size)
from cnnjax.models.torch_weights import from_torch

# Importing a family module registers its models.
import cnnjax.models.simple_cnn  # noqa: F401,E402
import cnnjax.models.resnet  # noqa: F401,E402
import cnnjax.models.alexnet  # noqa: F401,E402
import cnnjax.models.lenet  # noqa: F401,E402
import cnnjax.models.mlp  # noqa: F401,E402
import cnnjax.models.vgg  # noqa: F401,E402
import cnnjax.models.googlenet  # noqa: F401,E402
import cnnjax.models.unet  # noqa: F401,E402
import cnnjax.models.textcnn  # noqa: F401,E402
import cnnjax.models.plain_cnn  # noqa: F401,E402
import cnnjax.models.resnet9  # noqa: F401,E402
import cnnjax.models.nfnet  # noqa: F401,E402
import cnnjax.models.mixer  # noqa: F401,E402
import cnnjax.models.mobilenet  # noqa: F401,E402
import cnnjax.models.efficientnet  # noqa: F401,E402
import cnnjax.models.airbench  # noqa: F401,E402
