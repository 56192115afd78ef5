from engine import shared_task
from shop.models import Order   # models: only importable once the registry is ready


@shared_task(name="shop.tasks.count_orders")
def count_orders():
    return Order.objects.count()


@shared_task(name="shop.tasks.order_names")
def order_names():
    return sorted(Order.objects.values_list("name", flat=True))
