from typing import Any

from fastapi import APIRouter, HTTPException
from sqlalchemy.exc import IntegrityError

from app.api.deps import SessionDep
from app.models import Order, OrderCreate, OrderPublic

router = APIRouter(prefix="/orders", tags=["orders"])


@router.get("/{id}", response_model=OrderPublic)
def read_order(session: SessionDep, id: int) -> Any:
    """Get order by ID."""
    order = session.get(Order, id)
    if not order:
        raise HTTPException(status_code=404, detail="Order not found")
    return order


@router.post("/", response_model=OrderPublic, status_code=201)
def create_order(*, session: SessionDep, order_in: OrderCreate) -> Any:
    """Create new order."""
    order = Order.model_validate(order_in)
    session.add(order)
    try:
        session.commit()
    except IntegrityError:  # the UNIQUE email
        raise HTTPException(status_code=409, detail="An order with this email exists") from None
    session.refresh(order)
    return order
