from proj.engine import app


@app.task(name="billing.tasks.bill")
def bill(amount):
    return amount
