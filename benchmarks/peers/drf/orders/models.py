"""The generated order_service's `orders` table: same columns, types, UNIQUE email."""

from django.core.validators import MinValueValidator, RegexValidator
from django.db import models


class Order(models.Model):
    class Status(models.TextChoices):
        NEW = "new"
        PAID = "paid"
        SHIPPED = "shipped"

    customer = models.TextField(max_length=120)
    total = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0)])
    status = models.TextField(choices=Status.choices, default=Status.NEW)
    email = models.TextField(
        unique=True, null=True, blank=True, validators=[RegexValidator(r"^[^@]+@[^@]+$")]
    )
    paid_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "orders"
