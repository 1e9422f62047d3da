from django import forms
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from .models import Problem, Test


class UploadForm(forms.Form):
    problem = forms.IntegerField()
    input_file = forms.FileField()


@csrf_exempt
def upload_view(request):
    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return HttpResponse(form.errors.as_text(), status=400)
    test = Test(problem=Problem.objects.get(pk=form.cleaned_data["problem"]))
    test.input_file = form.cleaned_data["input_file"]
    test.save()
    return HttpResponse(str(test.pk))
