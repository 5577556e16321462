"""minicnn.data: medical image data sets, splits, augmentation and a threaded loader.

::

    ds = HAM10000(root, image_size=224)                      # ds[i] -> (uint8 HxWx3, label)
    train, val, test = split(ds, (0.6, 0.2, 0.2), by="group", seed=0)
    save_split("split.csv", (train, val, test))              # reload: load_split("split.csv", ds)
    loader = DataLoader(train, batch_size=32, shuffle=True, augment=Augment.standard(seed=0),
                        cache_dir="cache", preprocess="caffe")
    for epoch in range(n):
        loader.set_epoch(epoch)
        for images, labels in loader: ...
"""

from minicnn.data.augment import (
    Augment,
    ColorJitter,
    HorizontalFlip,
    RandomResizedCrop,
    Rotate,
    Rotate90,
    Transform,
    Translate,
    VerticalFlip,
)
from minicnn.data.base import ArrayDataset, Dataset, Subset
from minicnn.data.cache import DiskCache
from minicnn.data.chest_xray import ChestXRay
from minicnn.data.errors import CorruptImageError, DatasetError, DatasetFileNotFoundError
from minicnn.data.folders import ImageFolder, Lymphoma
from minicnn.data.gtsrb import GTSRB
from minicnn.data.ham10000 import HAM10000
from minicnn.data.image import decode_image, resize_array
from minicnn.data.loader import DataLoader
from minicnn.data.medmnist import MedMNIST
from minicnn.data.sampling import ClassBalancedSampler, class_weights
from minicnn.data.splits import check_no_leakage, load_split, save_split, split

__all__ = [
    "GTSRB",
    "HAM10000",
    "ArrayDataset",
    "Augment",
    "ChestXRay",
    "ClassBalancedSampler",
    "ColorJitter",
    "CorruptImageError",
    "DataLoader",
    "Dataset",
    "DatasetError",
    "DatasetFileNotFoundError",
    "DiskCache",
    "HorizontalFlip",
    "ImageFolder",
    "Lymphoma",
    "MedMNIST",
    "RandomResizedCrop",
    "Rotate",
    "Rotate90",
    "Subset",
    "Transform",
    "Translate",
    "VerticalFlip",
    "check_no_leakage",
    "class_weights",
    "decode_image",
    "load_split",
    "resize_array",
    "save_split",
    "split",
]
