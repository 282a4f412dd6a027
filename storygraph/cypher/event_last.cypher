MATCH (c:Counter {name: $story})
RETURN c.value AS seq
