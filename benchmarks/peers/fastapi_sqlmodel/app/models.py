"""The order models, in full-stack-fastapi-template's style (ItemBase, Item, ItemCreate,
ItemPublic): the same table and fields as the generated order_service's `orders` store."""

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, DateTime, Identity, Text
from sqlmodel import Field, SQLModel


def get_datetime_utc() -> datetime:
    return datetime.now(UTC)


class OrderStatus(StrEnum):
    new = "new"
    paid = "paid"
    shipped = "shipped"


# Shared properties
class OrderBase(SQLModel):
    customer: str = Field(max_length=120, sa_type=Text)
    total: float | None = Field(default=None, ge=0)
    status: OrderStatus = Field(default=OrderStatus.new, sa_type=Text)
    email: str | None = Field(
        default=None, unique=True, sa_type=Text, schema_extra={"pattern": r"^[^@]+@[^@]+$"}
    )
    paid_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


# Properties to receive on order creation
class OrderCreate(OrderBase):
    pass


# Database model, database table inferred from class name
class Order(OrderBase, table=True):
    __tablename__ = "orders"

    id: int | None = Field(
        default=None, primary_key=True, sa_type=BigInteger, sa_column_args=[Identity()]
    )
    created_at: datetime = Field(
        default_factory=get_datetime_utc,
        sa_type=DateTime(timezone=True),
    )
    updated_at: datetime = Field(
        default_factory=get_datetime_utc,
        sa_type=DateTime(timezone=True),
        sa_column_kwargs={"onupdate": get_datetime_utc},
    )


# Properties to return via API, id is always required
class OrderPublic(OrderBase):
    id: int
    created_at: datetime
    updated_at: datetime
