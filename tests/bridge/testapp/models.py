"""The models of OIOIOI's "Storing files" page, and the model of its own tests."""

import os.path

from django.db import models
from django.utils.text import get_valid_filename

from django_bridge.fields import FileField


class FileTestModel(models.Model):
    """OIOIOI's test model: its fixture is ``test_file_field.json``."""

    file_field = FileField(upload_to="tests", null=True, blank=True)


class TestFileModel(models.Model):
    __test__ = False  # not a pytest test class
    file_field = FileField(upload_to="some/folder")


class Problem(models.Model):
    name = models.CharField(max_length=50)


def make_test_filename(instance, filename):
    # instance will be an instance of Test; filename the name given by the user
    return "problems/%d/%s" % (instance.problem.id, get_valid_filename(os.path.basename(filename)))  # noqa: UP031


class Test(models.Model):
    __test__ = False
    problem = models.ForeignKey(Problem, on_delete=models.CASCADE)
    input_file = FileField(upload_to=make_test_filename)
