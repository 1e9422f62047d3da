"""Models as OIOIOI writes them: its FileField from ``oioioi.filetracker.fields``, its ``upload_to``."""

import os.path

from django.db import models
from django.utils.text import get_valid_filename

from oioioi.filetracker.fields import FileField


def make_problem_filename(instance, filename):
    return f"problems/{instance.problem_id}/{get_valid_filename(os.path.basename(filename))}"


class ProblemStatement(models.Model):
    problem_id = models.IntegerField()
    content = FileField(upload_to=make_problem_filename, verbose_name="content")


class ProblemPackage(models.Model):
    problem_id = models.IntegerField()
    package_file = FileField(upload_to=make_problem_filename, verbose_name="package")
    traceback = FileField(upload_to=make_problem_filename, null=True, blank=True, verbose_name="traceback")
