"""The operation catalog both surfaces adapt: each mq9 tool once (its input schema, its
handler, its result), with the safety options (config, policy) and what the model reads of an
answer (views, results, errors). The LangChain tools (``langchain_mq9.tools``) and the MCP
server (``mq9_mcp``) are thin adapters over it."""
