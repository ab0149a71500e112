"""What the original distributions of the standard datasets are: file names, published MD5 sums,
download locations, class names, split sizes, the default held-out validation size, and the
version of the tensorflow-datasets catalog entry of the same name that cnnjax prepares them as.

MD5 sums are the ones published with the datasets (and used by torchvision's downloaders).
`holdout` is the number of training examples the "holdout" split carves out
(cnnjax.data.splits): 5,000, as He et al. (2016, sec. 4.2) did on CIFAR-10 (45k/5k), and the
same for the others. `tfds_version` is the `VERSION` of tfds' builder (tensorflow_datasets 4.9.10:
image_classification/mnist.py 3.0.1 for mnist and fashion_mnist, image_classification/cifar.py 3.0.2
for cifar10 and cifar100, datasets/imagenet2012 5.1.0); its feature spec is in
cnnjax.data.tfds_store.catalog_features.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Original:
    """One dataset's original distribution."""

    title: str  # how results on it are labelled
    url: str  # download base: file names are appended
    md5: dict[str, str]  # archive or file name -> published MD5
    class_names: tuple[str, ...]
    counts: dict[str, int]  # published split sizes
    holdout: int
    homepage: str
    tfds_version: str  # the tfds catalog's version of this dataset


_DIGITS = tuple(str(d) for d in range(10))
_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_FASHION_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# IDX file names of each split: (images, labels).
IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
# The python version: the archive, and its files for extracted copies.
CIFAR_ARCHIVES = {"cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py"),
                  "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python")}
CIFAR_SPLIT_FILES = {
    "cifar10": {"train": ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                          "data_batch_5"), "test": ("test_batch",), "meta": ("batches.meta",)},
    "cifar100": {"train": ("train",), "test": ("test",), "meta": ("meta",)},
}

ORIGINALS: dict[str, Original] = {
    "mnist": Original(
        title="MNIST", url="https://storage.googleapis.com/cvdf-datasets/mnist/", md5=_MNIST_MD5,
        class_names=_DIGITS, counts={"train": 60000, "test": 10000}, holdout=5000,
        homepage="http://yann.lecun.com/exdb/mnist/", tfds_version="3.0.1"),
    "fashion_mnist": Original(
        title="Fashion-MNIST", url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        md5=_FASHION_MD5,
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                     "Sneaker", "Bag", "Ankle boot"),
        counts={"train": 60000, "test": 10000}, holdout=5000,
        homepage="https://github.com/zalandoresearch/fashion-mnist", tfds_version="3.0.1"),
    "cifar10": Original(
        title="CIFAR-10", url="https://www.cs.toronto.edu/~kriz/",
        md5={"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
             "data_batch_1": "c99cafc152244af753f735de768cd75f",
             "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
             "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
             "data_batch_4": "634d18415352ddfa80567beed471001a",
             "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
             "test_batch": "40351d587109b95175f43aff81a1287e",
             "batches.meta": "5ff9c542aee3614f3951f8cda6e48888"},
        class_names=CIFAR10_CLASSES, counts={"train": 50000, "test": 10000}, holdout=5000,
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html", tfds_version="3.0.2"),
    "cifar100": Original(
        title="CIFAR-100", url="https://www.cs.toronto.edu/~kriz/",
        md5={"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
             "train": "16019d7e3df5f24257cddd939b257f8d",
             "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
             "meta": "7973b15100ade9c7d40fb424638fde48"},
        class_names=(), counts={"train": 50000, "test": 10000}, holdout=5000,
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html", tfds_version="3.0.2"),
    # Downloaded by hand after registering (no `url`); MD5s as listed with torchvision's ImageNet
    # dataset; classes are read from the train tar. The holdout (10,000 training images) is this
    # codebase's choice for tuning without the validation set; the papers tuned on validation.
    "imagenet2012": Original(
        title="ImageNet-2012 (ILSVRC-2012)", url="",
        md5={"ILSVRC2012_img_train.tar": "1d675b47d978889d74fa0da5fadfb00e",
             "ILSVRC2012_img_val.tar": "29b22e2961454d5413ddabcf34fc5622",
             "ILSVRC2012_devkit_t12.tar.gz": "fa75699e90414af021442c21a62c3abf"},
        class_names=(), counts={"train": 1281167, "validation": 50000},
        holdout=10000, homepage="https://image-net.org/challenges/LSVRC/2012/",
        tfds_version="5.1.0"),
}


def download_files(name: str) -> tuple[str, ...]:
    """The files `--download` fetches for dataset `name` (appended to its `url`); ValueError for
    a dataset downloaded by hand."""
    if not ORIGINALS[name].url:
        raise ValueError(f"--download cannot fetch {ORIGINALS[name].title}: download its files "
                         f"by hand (after registering) from {ORIGINALS[name].homepage}")
    if name in CIFAR_ARCHIVES:
        return (CIFAR_ARCHIVES[name][0],)
    return tuple(f for pair in IDX_FILES.values() for f in pair)
