"""Sample module robots. Run them with: b24robots serve examples.demo_robots:router

The code is in `b24robots/demo/robots.py` (it ships with the package for `b24robots demo`).
"""

from b24robots.demo.robots import DiscountIn, DiscountOut, discount, router

__all__ = ["DiscountIn", "DiscountOut", "discount", "router"]
