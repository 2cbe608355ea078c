"""The data sets apikit reads: where their files live, their official counts, and where to get them.

This table is the one place that knows these facts; readers, downloads and error messages all look here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Archive", "Source", "SOURCES", "NAMES", "source", "check_source", "content_of"]

# fastai's copies of two archives (fastai.data.external.URLs.CUB_200_2011 and .CARS, which a test holds these
# equal to), written out so that the data set names load without fastai.
_FASTAI_S3 = "https://s3.amazonaws.com/fast-ai-imageclas/"


@dataclass(frozen=True)
class Archive:
    """One file to download, with the checksum of the whole file (`algo` is a `hashlib` name)."""
    url: str
    algo: str
    digest: str
    size: int | None = None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Source:
    """A data set on disk.

    `folders`: where its index files live, relative to the data root; the first is where a download puts
    them. `layouts`: the files (folders end in "/", "a|b" means either) that must all be there; any one
    layout will do. `official`: (train images, test images, classes) as published, or None.
    `fastai_url`: fastai's copy of the archive, checked against fastai's pinned size and hash, extracted by apikit.
    `archives`: fetched by apikit and checked against the pinned checksums. `manual`: how to get it by hand.
    `banner`: rows of pixels to cut from the bottom of every image. `content_param`: the run parameter that says
    which images the name stands for, where the name alone does not (a folder's path, the generated set's
    settings); runs that differ in it trained on different data.
    """
    name: str
    title: str
    folders: tuple[str, ...]
    layouts: tuple[tuple[str, ...], ...]
    official: tuple[int, int, int] | None = None
    fastai_url: str | None = None
    archives: tuple[Archive, ...] = ()
    manual: str = ""
    banner: int = 0
    content_param: str | None = None

    @property
    def top(self) -> str:
        """The folder a download creates in the data root."""
        return Path(self.folders[0]).parts[0]


CUB_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt", "images/")

SOURCES = {s.name: s for s in (
    Source(
        "cub", "CUB-200-2011",
        folders=("CUB_200_2011",),
        layouts=(CUB_FILES,),
        official=(5994, 5794, 200),
        fastai_url=_FASTAI_S3 + "CUB_200_2011.tgz",
        manual="CUB_200_2011.tgz from https://data.caltech.edu/records/65de6-vp158, extracted into the data root",
    ),
    Source(
        "aircraft", "FGVC-Aircraft (variants)",
        folders=("fgvc-aircraft-2013b/data", "data"),
        layouts=(("variants.txt", "images_variant_trainval.txt", "images_variant_test.txt", "images/"),),
        official=(6667, 3333, 100),
        # md5 of the whole archive, as published with the data set and pinned by other loaders
        # (e.g. torchvision-compatible and R torch datasets); checked after every download.
        archives=(Archive("https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
                          "md5", "d4acdd33327262359767eeaa97a4f732"),),
        manual="fgvc-aircraft-2013b.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/, "
               "extracted into the data root",
        banner=20,  # the data set's README: "the bottom 20 pixels of each image contain a copyright banner"
    ),
    Source(
        "cars", "Stanford Cars",
        folders=("stanford-cars", "stanford_cars", "cars"),
        layouts=(
            # the original devkit release
            ("devkit/cars_train_annos.mat", "devkit/cars_meta.mat",
             "cars_test_annos_withlabels.mat|devkit/cars_test_annos_withlabels.mat", "cars_train/", "cars_test/"),
            # fastai's stanford-cars archive, or the original car_ims release: one cars_annos.mat with a test flag
            ("cars_annos.mat", "cars_train/|car_ims/", "cars_test/|car_ims/"),
        ),
        official=(8144, 8041, 196),
        fastai_url=_FASTAI_S3 + "stanford-cars.tgz",
        manual="the devkit (car_devkit.tgz, cars_train.tgz, cars_test.tgz, cars_test_annos_withlabels.mat) "
               "from https://ai.stanford.edu/~jkrause/cars/car_dataset.html, extracted into <data root>/stanford-cars",
    ),
    Source(
        "dogs", "Stanford Dogs",
        folders=("stanford-dogs", "stanford_dogs", "StanfordDogs"),
        layouts=(("train_list.mat", "test_list.mat", "Images/"),),
        official=(12000, 8580, 120),
        # sha256 and sizes as pinned by TensorFlow Datasets (url_checksums/stanford_dogs.txt)
        archives=(
            Archive("http://vision.stanford.edu/aditya86/ImageNetDogs/images.tar", "sha256",
                    "a443fc2f9a851aa1a7b8e4fa4af94b8459fce2c9f5a2f4dd4669cf9673a4ec58", 793579520),
            Archive("http://vision.stanford.edu/aditya86/ImageNetDogs/lists.tar", "sha256",
                    "34b47cacd9a98b5d150e084f24d29391c084c55272295ec65c85651bc35f4d6c", 481280),
        ),
        manual="images.tar and lists.tar from http://vision.stanford.edu/aditya86/ImageNetDogs/, "
               "both extracted into <data root>/stanford-dogs",
    ),
    Source(
        "nabirds", "NABirds",
        folders=("nabirds",),
        layouts=(CUB_FILES,),
        official=(23929, 24633, 555),
        manual="NABirds is released only to those who accept its terms of use: request nabirds.tar.gz at "
               "https://dl.allaboutbirds.org/nabirds and extract it into the data root, so that "
               "<data root>/nabirds/images.txt exists",
    ),
    Source(
        "synthetic", "apikit's synthetic birds",
        folders=("synthetic",),
        layouts=(CUB_FILES,),
        manual="generated by apikit.data.synthetic.make on first use",
        content_param="synthetic",
    ),
    Source(
        "folder", "an image folder",
        folders=("",),
        layouts=(("train/", "valid/|val/|test/"),),
        manual="your own images as <path>/train/<class>/*.jpg and <path>/valid/<class>/*.jpg (or val/, test/)",
        content_param="data_path",
    ),
)}

NAMES = tuple(SOURCES)


def content_of(params) -> dict:
    """{parameter: value} of what a run's data set name leaves open (`Source.content_param`): {"data_path": ...}
    for an image folder, {"synthetic": ...} for the generated set, {} for a benchmark (its path only says where
    it lives). Two runs with the same name and other contents trained on different images."""
    name = params.get("dataset")
    src = SOURCES.get(name) if isinstance(name, str) else None
    return {src.content_param: params.get(src.content_param)} if src is not None and src.content_param else {}


def source(name: str) -> Source:
    """The `Source` called `name`; a ValueError lists the valid names."""
    try:
        return SOURCES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown data set {name!r}; valid names are {', '.join(map(repr, NAMES))}") from None


def check_source(name: str, path=None, synthetic: dict | None = None) -> Source:
    """Cheap checks of a data set request (reads no file): a known name, generator settings only for the
    synthetic set, and a path for your own folder. Returns the `Source`."""
    src = source(name)
    if synthetic is not None and name != "synthetic":
        raise ValueError(f"synthetic={synthetic!r} sets the generator of the 'synthetic' data set; it does not apply "
                         f"to {name!r}.")
    if name == "folder" and path is None:
        raise ValueError("dataset='folder' needs path= (the data_path parameter): the folder that holds train/ and "
                         "valid/ (or test/).")
    return src
