from rest_framework import serializers

from orders.models import Order


class OrderSerializer(serializers.ModelSerializer):
    class Meta:
        model = Order
        fields = [
            "id",
            "customer",
            "total",
            "status",
            "email",
            "paid_at",
            "created_at",
            "updated_at",
        ]
