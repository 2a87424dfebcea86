"""
Seed the demo user of the example: username ``demo``, password ``demo``.

An example convenience: a real project never ships a known password.
"""

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import migrations

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo"


def create_demo_user(apps, schema_editor):
    app_label, model_name = settings.AUTH_USER_MODEL.split(".")
    User = apps.get_model(app_label, model_name)
    if not User.objects.filter(username=DEMO_USERNAME).exists():
        User.objects.create(username=DEMO_USERNAME, password=make_password(DEMO_PASSWORD),
                            first_name="Demo", is_active=True)


def remove_demo_user(apps, schema_editor):
    app_label, model_name = settings.AUTH_USER_MODEL.split(".")
    apps.get_model(app_label, model_name).objects.filter(username=DEMO_USERNAME).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("chat", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [migrations.RunPython(create_demo_user, remove_demo_user)]
